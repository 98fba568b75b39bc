"""The review queue in a real browser: a clinician logs in to the admin, sees only their
groups' items, opens one, approves it with a reason, and the patient's app then gets the
nudge. Database work happens before and after the browser runs: Django refuses ORM calls
while Playwright's event loop runs in this thread."""

from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, sync_playwright

from nudges.models import Delivery, DeliveryState, ReviewRequest, ReviewState, Template
from nudges.services.reviews import review_open
from safety.models import RuleSet, RuleSetStatus
from safety.rules import Action, Verdict
from tests.factories import make_clinician, make_delivery_row, make_patient

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory
QUEUE = "/admin/clinicians/reviewqueueitem/"


def open_review(patient, group: str, rule: str) -> ReviewRequest:
    delivery = make_delivery_row(
        patient,
        DeliveryState.AWAITING_REVIEW,
        template=Template.objects.filter(slug="breathing-478").order_by("-version").first(),
    )
    return review_open(
        delivery=delivery,
        verdict=Verdict(Action.REVIEW, rules=(rule,), groups=(group,), severity="high"),
        ruleset_version=RuleSet.objects.get(status=RuleSetStatus.ACTIVE).version,
        now=timezone.now(),
    )


def approve_in_browser(
    page: Page, base: str, *, username: str, mine: str, foreign: str, token: str
) -> tuple[str, str, list[str]]:
    """Log in, check the queue, approve the item of patient `mine`; return the queue page's
    text, the message shown after approving, and the nudge ids the patient's app gets."""
    page.goto(f"{base}/admin/login/?next={QUEUE}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}{QUEUE}")
    queue_text = page.locator("#result_list").inner_text()

    page.locator("#result_list tr", has_text=mine).locator("a").first.click()
    page.wait_for_selector("#patient-facts")
    assert mine in page.locator("#patient-facts").inner_text()
    assert foreign not in page.content()
    decide = page.locator("section.decide")
    decide.locator("select[name=reason]").first.select_option("appropriate")
    decide.locator("textarea[name=comment]").first.fill("Checked with the care plan.")
    approve = decide.locator("input[name=decide_approve]")
    posts_to = approve.evaluate("button => button.form && button.form.action")
    assert str(posts_to).endswith("/decide/"), f"the Approve button submits to {posts_to}"
    approve.click()
    page.wait_for_selector(".messagelist")
    message = page.locator(".messagelist").inner_text()

    response = page.request.get(
        f"{base}/api/v1/nudges/", headers={"Authorization": f"Token {token}"}
    )
    assert response.status == 200, response.status
    return queue_text, message, [nudge["id"] for nudge in response.json()]


def test_a_clinician_approves_an_item_in_the_browser_and_the_patient_gets_the_nudge(
    live_server, tmp_path: Path
):
    clinician = make_clinician("browser-cardio", ("heart-failure",))
    heart, token = make_patient(groups=("heart-failure",))
    mood, _ = make_patient(groups=("depression",))
    item = open_review(heart, "heart-failure", "HF-VIGOROUS-01")
    foreign = open_review(mood, "depression", "DEP-SLEEPRESTRICT-01")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True
        )
        page = browser.new_page()
        page.set_default_timeout(5000)
        try:
            queue_text, message, nudge_ids = approve_in_browser(
                page,
                live_server.url,
                username=clinician.username,
                mine=heart.pseudonym,
                foreign=mood.pseudonym,
                token=token,
            )
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    assert heart.pseudonym in queue_text
    assert mood.pseudonym not in queue_text
    assert "Approved" in message
    assert str(item.delivery_id) in nudge_ids
    item.refresh_from_db()
    assert item.state == ReviewState.APPROVED
    assert item.decisions.get().comment == "Checked with the care plan."
    assert Delivery.objects.get(pk=item.delivery_id).state == DeliveryState.DELIVERED
    foreign.refresh_from_db()
    assert foreign.state == ReviewState.PENDING
