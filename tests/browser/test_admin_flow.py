"""An operator in a real browser: a job type refused for its cron and fixed, a job scheduled from the
admin and seen to complete on a live kojo_server, a running job aborted from the admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

import kojo
from kojo.models import Job, JobStateChange, JobType
from kojo.states import JobState, Outcome
from tests.server.conftest import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.server]

TYPE_CODE = "browser_report"


def by_css(browser, selector):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector)


def page_text(browser) -> str:
    return by_css(browser, "body").text


def wait_text(browser, text: str) -> None:
    """Wait for ``text`` on the page: a click returns before the next page has loaded."""
    from selenium.common.exceptions import WebDriverException

    def shown():
        try:
            return text in page_text(browser)
        except WebDriverException:  # the old page went away while it was read
            return False

    wait_for(shown, timeout=15, message=f"{text!r} on the page")


def open_page(browser, live_server, path: str, **query: str) -> None:
    from urllib.parse import urlencode

    browser.get(live_server.url + path + (f"?{urlencode(query)}" if query else ""))


def run_action(browser, action: str, *ids: int) -> None:
    from selenium.webdriver.support.ui import Select

    for pk in ids:
        by_css(browser, f'input[name="_selected_action"][value="{pk}"]').click()
    Select(by_css(browser, 'select[name="action"]')).select_by_value(action)
    by_css(browser, 'button[name="index"]').click()


@pytest.fixture
def logged_in(browser, live_server, admin_user):
    open_page(browser, live_server, reverse("admin:login"))
    by_css(browser, "#id_username").send_keys("admin")
    by_css(browser, "#id_password").send_keys("password")
    by_css(browser, 'input[type="submit"]').click()
    wait_text(browser, "Site administration")
    return browser


def test_job_type_is_fixed_scheduled_and_run_to_completion(logged_in, live_server, start_server, screenshot):
    browser = logged_in
    from selenium.webdriver.support.ui import Select

    open_page(browser, live_server, reverse("admin:kojo_jobtype_add"))
    by_css(browser, "#id_type_code").send_keys(TYPE_CODE)
    by_css(browser, "#id_name").send_keys("Report from the browser")
    Select(by_css(browser, "#id_worker")).select_by_value("tests.kojo_jobs.sleep")
    by_css(browser, "#id_cron_expression").send_keys("61 3 * * *")
    by_css(browser, 'input[name="_continue"]').click()
    wait_text(browser, "'61 3 * * *' is not a valid cron expression")
    screenshot("bad-cron-refused")

    cron = by_css(browser, "#id_cron_expression")
    cron.clear()
    cron.send_keys("0 3 1 1 *")  # once a year: no cron job appears while the test runs
    by_css(browser, 'input[name="_continue"]').click()
    wait_text(browser, "was added successfully")
    text = page_text(browser)
    assert "at 03:00 UTC on 1 January" in text
    assert text.count("-01-01 03:00 UTC (in ") == 5
    screenshot("job-type-saved-with-next-runs")

    open_page(browser, live_server, reverse("admin:kojo_jobtype_changelist"), q=TYPE_CODE)
    kind_id = JobType.objects.get(type_code=TYPE_CODE).pk
    run_action(browser, "schedule_now", kind_id)
    wait_text(browser, "Scheduled job ")
    job = Job.objects.get(job_type_id=kind_id)
    assert f"Scheduled job {job.pk} ({TYPE_CODE})." in page_text(browser)
    screenshot("job-scheduled")

    # The one-click switch in the list posts the list's own form (with its CSRF token) elsewhere.
    by_css(browser, "button.kojo-switch").click()
    wait_text(browser, f"Disabled 1 job type: {TYPE_CODE}.")
    assert not JobType.objects.get(pk=kind_id).is_enabled
    screenshot("type-disabled-in-one-click")
    by_css(browser, "button.kojo-switch").click()
    wait_text(browser, f"Enabled 1 job type: {TYPE_CODE}.")
    assert JobType.objects.get(pk=kind_id).is_enabled

    start_server()
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.COMPLETE_SUCCESS).exists(),
        timeout=30,
        message=f"job {job.pk} to complete",
    )
    open_page(browser, live_server, reverse("admin:kojo_job_changelist"), job_type__id__exact=str(kind_id))
    row = by_css(browser, f'input[name="_selected_action"][value="{job.pk}"]').find_element("xpath", "../..")
    assert "complete success" in row.text
    screenshot("job-completed-in-the-list")
    open_page(browser, live_server, reverse("admin:kojo_job_change", args=[job.pk]))
    assert "complete success" in page_text(browser)
    screenshot("job-changelog")


def test_a_running_job_is_aborted_from_the_admin(
    logged_in, live_server, start_server, make_job_type, screenshot
):
    browser = logged_in
    kind = make_job_type("browser_hang", worker="tests.kojo_jobs.hang")
    job = kojo.schedule(kind.type_code)
    server = start_server()
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.WORKING, pid__isnull=False)
        .exclude(pid=server.pid)
        .exists(),
        timeout=30,
        message=f"job {job.pk} to be working in its own process",
    )
    open_page(browser, live_server, reverse("admin:kojo_job_changelist"), state__exact="working")
    screenshot("working-job")
    run_action(browser, "abort", job.pk)
    wait_text(browser, f"Abort sent to the servers running job {job.pk}.")
    screenshot("abort-sent")

    wait_for(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.CANCELED).exists(),
        timeout=30,
        message=f"job {job.pk} to be aborted",
    )
    change = JobStateChange.objects.get(job=job, outcome=Outcome.ABORTED)
    assert change.reason == "aborted by admin"
    open_page(browser, live_server, reverse("admin:kojo_job_change", args=[job.pk]))
    text = page_text(browser)
    assert "aborted by admin" in text
    screenshot("job-aborted")
