"""Exports of a released report (CSV, JSON, printable HTML), each carrying a signed manifest:
the mechanism, the privacy loss, the contribution bounds, the ledger balance, the code version
and the SHA-256 of the results. Exporting reads only the stored release: it costs no budget.

What is signed (Ed25519, privacy.signing):
- JSON: the canonical JSON (sorted keys, no spaces) of {"manifest", "results"}; the signature
  sits beside them.
- CSV and HTML: every byte of the file before its last line, which holds the signature.
In each format the manifest's results_sha256 is the SHA-256 of the canonical JSON of the
result rows, the same for every export of one release; export_verify recomputes it from the
rows in the file."""

import csv
import functools
import hashlib
import io
import json
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

from privacy import signing
from privacy.charts import chart_svg
from privacy.models import Release

FORMAT = "nudge-engine/dp-report/1"
FORMATS = ("csv", "json", "html")
CSV_FIRST = "# nudge-engine differentially private report (signed; see the manifest below)"
CSV_MANIFEST = "# manifest: "
SIGNATURE_LINE = re.compile(
    r"^(?:# |<!-- )signature: Ed25519 (?P<key>[0-9a-f]{16}) (?P<value>[A-Za-z0-9+/=]+)(?: -->)?$"
)
HTML_BLOCK = re.compile(
    r'<script type="application/json" id="report-(?P<name>manifest|results)">(?P<body>.*?)'
    r"</script>",
    re.S,
)
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "html": "text/html; charset=utf-8",
}


class ExportError(Exception):
    """The file is not an intact export of ours; the message says what failed."""


@dataclass(frozen=True)
class Export:
    content: bytes
    content_type: str
    filename: str


def canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def results_sha256(results: list[dict[str, Any]]) -> str:
    return hashlib.sha256(canonical(results)).hexdigest()


@functools.cache
def code_version() -> str:
    """The package version and, in a checkout, the git commit."""
    version = f"nudge-engine {metadata.version('nudge-engine')}"
    try:
        sha = subprocess.run(  # noqa: S603
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version} (git {sha})" if sha else version


def manifest_build(
    release: Release, *, export: str, ledger: dict[str, Any], exported_at: str
) -> dict[str, Any]:
    p = release.parameters
    return {
        "format": FORMAT,
        "export": export,
        "release_id": str(release.pk),
        "report": release.report,
        "title": p["title"],
        "period": release.period,
        "released_at": release.created_at.isoformat(),
        "exported_at": exported_at,
        "privacy_unit": p["privacy_unit"],
        "consent": p["consent"],
        "mechanism": p["mechanism"],
        "privacy_loss": p["privacy_loss"],
        "contribution_bounds": p["contribution_bounds"],
        "aggregates": p["aggregates"],
        "intervals": p["intervals"],
        "ledger": {
            "period": release.period,
            "unit": "zCDP rho per patient",
            "cap_rho": release.cap_nanorho / 1e9,
            "spent_rho_after_release": release.spent_after_nanorho / 1e9,
            "spent_rho_at_export": ledger["spent_rho"],
            "remaining_rho_at_export": ledger["remaining_rho"],
        },
        "code_version": release.code_version,
        "opendp_version": p["opendp_version"],
        "key_columns": p["keys"],
        "columns": p["columns"],
        "results_sha256": release.results_sha256,
        "signing_key": {
            "algorithm": signing.ALGORITHM,
            "key_id": signing.key_id(),
            "public_key": signing.public_key_hex(),
        },
    }


def export_render(
    release: Release, *, fmt: str, ledger: dict[str, Any], exported_at: str
) -> Export:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    manifest = manifest_build(release, export=fmt, ledger=ledger, exported_at=exported_at)
    body = {"csv": _csv, "json": _json, "html": _html}[fmt](release, manifest)
    name = f"{release.report}-{release.period}-{str(release.pk)[:8]}.{fmt}"
    return Export(content=body, content_type=CONTENT_TYPES[fmt], filename=name)


def _signature_line(message: bytes, *, html: bool) -> bytes:
    text = f"signature: {signing.ALGORITHM} {signing.key_id()} {signing.sign(message)}"
    return (f"<!-- {text} -->\n" if html else f"# {text}\n").encode()


def _json(release: Release, manifest: dict[str, Any]) -> bytes:
    signed = {"manifest": manifest, "results": release.results}
    signature = {
        "algorithm": signing.ALGORITHM,
        "key_id": signing.key_id(),
        "value": signing.sign(canonical(signed)),
    }
    return json.dumps({**signed, "signature": signature}, indent=1, sort_keys=True).encode() + b"\n"


def _csv(release: Release, manifest: dict[str, Any]) -> bytes:
    columns, keys = manifest["columns"], set(manifest["key_columns"])
    out = io.StringIO()
    out.write(f"{CSV_FIRST}\n{CSV_MANIFEST}{canonical(manifest).decode()}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in release.results:
        writer.writerow([_cell(row[c], key=c in keys) for c in columns])
    head = out.getvalue().encode()
    return head + _signature_line(head, html=False)


def _cell(value: Any, *, key: bool) -> str:
    if key:
        return str(value)
    return "" if value is None else json.dumps(value)


def _html(release: Release, manifest: dict[str, Any]) -> bytes:
    p = release.parameters
    page = render_to_string(
        "privacy/report_print.html",
        {
            "release": release,
            "manifest": manifest,
            "columns": manifest["columns"],
            "rows": [[row[c] for c in manifest["columns"]] for row in release.results],
            "chart": mark_safe(  # noqa: S308 - our own SVG; every text in it is escaped
                chart_svg(release.results, keys=p["keys"], value=p["headline"], title=p["title"])
            ),
            "manifest_json": mark_safe(_script_json(manifest)),  # noqa: S308
            "results_json": mark_safe(_script_json(release.results)),  # noqa: S308
        },
    ).encode()
    if not page.endswith(b"\n"):
        page += b"\n"
    return page + _signature_line(page, html=True)


def _script_json(value: Any) -> str:
    """Canonical JSON safe inside a <script> element."""
    return canonical(value).decode().replace("<", "\\u003c").replace(">", "\\u003e")


# Verification -------------------------------------------------------------------------------


def export_verify(content: bytes, *, public_hex: str | None = None) -> dict[str, Any]:
    """The manifest of an intact export signed by the trusted key; ExportError otherwise."""
    text = content.decode("utf-8", errors="strict")
    if text.lstrip().startswith("{"):
        manifest, results = _verified_json(text, public_hex)
    elif text.startswith(CSV_FIRST) or text.lstrip().lower().startswith("<!doctype html"):
        manifest, results = _verified_lines(content, text, public_hex)
    else:
        raise ExportError("not a report export of this engine (unknown format)")
    if manifest.get("format") != FORMAT:
        raise ExportError("unknown manifest format")
    if results_sha256(results) != manifest.get("results_sha256"):
        raise ExportError("the results do not match the manifest's hash")
    return manifest


def _verified_json(text: str, public_hex: str | None) -> tuple[dict, list]:
    try:
        document = json.loads(text)
        manifest, results = document["manifest"], document["results"]
        value = document["signature"]["value"]
    except (ValueError, KeyError, TypeError):
        raise ExportError("malformed JSON export") from None
    _check(canonical({"manifest": manifest, "results": results}), value, public_hex)
    return manifest, results


def _verified_lines(content: bytes, text: str, public_hex: str | None) -> tuple[dict, list]:
    body, _, last = content.rstrip(b"\n").rpartition(b"\n")
    match = SIGNATURE_LINE.match(last.decode())
    if not match:
        raise ExportError("no signature line at the end of the file")
    _check(body + b"\n", match["value"], public_hex)
    if text.startswith(CSV_FIRST):
        return _csv_parts(body.decode())
    blocks = {m["name"]: m["body"] for m in HTML_BLOCK.finditer(body.decode())}
    try:
        return json.loads(blocks["manifest"]), json.loads(blocks["results"])
    except (KeyError, ValueError):
        raise ExportError("the HTML export lacks its manifest or results") from None


def _check(message: bytes, value: str, public_hex: str | None) -> None:
    try:
        signing.verify(message, value, public_hex=public_hex)
    except signing.SignatureError as error:
        raise ExportError(str(error)) from None


def _csv_parts(body: str) -> tuple[dict, list]:
    lines = body.split("\n")
    if len(lines) < 3 or not lines[1].startswith(CSV_MANIFEST):
        raise ExportError("the CSV export lacks its manifest line")
    manifest = json.loads(lines[1][len(CSV_MANIFEST) :])
    keys = set(manifest["key_columns"])
    reader = csv.reader(io.StringIO("\n".join(lines[2:])))
    header = next(reader)
    results = []
    for cells in reader:
        results.append(
            {
                c: v if c in keys else (None if v == "" else json.loads(v))
                for c, v in zip(header, cells, strict=True)
            }
        )
    return manifest, results
