"""Signed exports of released reports: verify_report accepts intact files of every format and
refuses tampered ones."""

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from privacy.charts import chart_svg
from privacy.exports import ExportError, export_verify
from privacy.reports import release_export, report_release
from tests.test_privacy_dp_release import PERIOD, deliver, make_officer

pytestmark = pytest.mark.django_db


@pytest.fixture
def release(patient_a):
    deliver(patient_a[0], day=4, state="done")
    return report_release(
        report="acceptance", period=PERIOD, budget="0.1", by=make_officer(), channel="api"
    )


def _verify_command(path) -> str:
    out = io.StringIO()
    call_command("verify_report", str(path), stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "json", "html"])
def test_an_intact_export_verifies_with_its_manifest(tmp_path, release, fmt):
    path = tmp_path / f"report.{fmt}"
    path.write_bytes(release_export(release=release, fmt=fmt).content)

    assert _verify_command(path).startswith("OK")
    manifest = export_verify(path.read_bytes())
    assert manifest["release_id"] == str(release.pk)
    assert manifest["privacy_loss"]["rho"] == 0.1
    assert manifest["contribution_bounds"]["per_group"] == 1
    assert manifest["ledger"]["cap_rho"] == 1.0
    assert manifest["ledger"]["spent_rho_after_release"] == 0.1
    assert manifest["code_version"].startswith("nudge-engine")
    assert manifest["mechanism"].startswith("discrete Gaussian")
    assert manifest["results_sha256"] == release.results_sha256


def _tamper_number(content: bytes, fmt: str) -> bytes:
    if fmt == "json":
        document = json.loads(content)
        document["results"][0]["patients"] += 1
        return json.dumps(document, indent=1, sort_keys=True).encode()
    lines = content.decode().split("\n")
    if fmt == "csv":
        cells = lines[3].split(",")  # the first data row, after two comments and the header
        cells[2] = str(int(cells[2]) + 1)
        lines[3] = ",".join(cells)
    else:
        (i, line) = next((i, ln) for i, ln in enumerate(lines) if ln.startswith("  <tr><td"))
        lines[i] = line.replace("</td><td>", "</td><td>9", 1)
    return "\n".join(lines).encode()


def _tamper_loss(content: bytes, fmt: str) -> bytes:
    return content.replace(b'"rho":0.1', b'"rho":0.01').replace(b'"rho": 0.1', b'"rho": 0.01')


@pytest.mark.parametrize("fmt", ["csv", "json", "html"])
@pytest.mark.parametrize("tamper", [_tamper_number, _tamper_loss])
def test_a_tampered_export_is_refused(tmp_path, release, fmt, tamper):
    content = release_export(release=release, fmt=fmt).content
    tampered = tamper(content, fmt)
    assert tampered != content
    path = tmp_path / f"report.{fmt}"
    path.write_bytes(tampered)

    with pytest.raises(CommandError, match="REFUSED"):
        _verify_command(path)


@pytest.mark.parametrize("fmt", ["csv", "html"])
def test_an_export_with_lines_added_after_its_signature_is_refused(release, fmt):
    content = release_export(release=release, fmt=fmt).content

    with pytest.raises(ExportError):
        export_verify(content + b"extra,row\n")
    with pytest.raises(ExportError):
        export_verify(content.rsplit(b"\n", 2)[0] + b"\n")  # signature line removed


@pytest.mark.parametrize("fmt", ["csv", "json", "html"])
def test_an_export_signed_with_another_key_is_refused(settings, release, fmt):
    settings.REPORT_SIGNING_KEY = "someone else's key"
    forged = release_export(release=release, fmt=fmt).content
    settings.REPORT_SIGNING_KEY = "our key"
    ours = release_export(release=release, fmt=fmt).content

    export_verify(ours)
    with pytest.raises(ExportError, match="signature"):
        export_verify(forged)


def test_the_chart_escapes_its_labels_and_draws_every_interval():
    rows: list[dict[str, Any]] = [
        {"g": "<script>", "v": 3, "v_low": 1, "v_high": 5},
        {"g": "b&c", "v": None, "v_low": 0, "v_high": 1},
    ]

    svg = chart_svg(rows, keys=["g"], value="v", title="t <1>")

    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg and "b&amp;c" in svg
    assert svg.count("<path") == 2
    assert "n/a" in svg
