from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from kojo import listing
from kojo.models import Job, JobStateChange, JobType, Server
from kojo.states import JobState
from tests.conftest import added_types

pytestmark = pytest.mark.django_db

VALID = {
    "type_code": "nightly_report",
    "name": "Nightly report",
    "worker": "tests.kojo_jobs.noop",
    "is_enabled": "on",
    "queue": "default",
    "cron_expression": "0 3 * * *",
    "default_importance": "0",
    "can_work_in_parallel": "on",
    "schedule_limit": "0",
    "schedule_limit_allowance": "0",
    "auto_complete_success": "on",
    "timeout": "",
    "max_attempts": "1",
    "retry_backoff": "exponential",
    "cron_overflow": "queue",
    "retry_interval": "PT10S",
    "retry_jitter": "on",
    "auto_delete_interval_duration": "P7D",
}


def test_admin_creates_a_valid_job_type(admin_client):
    response = admin_client.post(reverse("admin:kojo_jobtype_add"), VALID)
    assert response.status_code == 302
    assert JobType.objects.get(type_code="nightly_report").cron_expression == "0 3 * * *"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cron_expression", "61 * * * *", "is not a valid cron expression"),
        ("auto_delete_interval_duration", "7 days", "is not an ISO 8601 duration"),
        ("timeout", "P1M", "years and months"),
        ("type_code", "Nightly Report", "is not a valid type code"),
        ("schedule_limit", "-1", "Ensure this value is greater than or equal to 0"),
        ("worker", "os.system", "is not a registered kojo worker"),
    ],
)
def test_admin_refuses_bad_values_with_the_shared_message(admin_client, field, value, message):
    response = admin_client.post(reverse("admin:kojo_jobtype_add"), {**VALID, field: value})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not added_types().exists()


def test_jobs_are_visible_but_not_editable(admin_client, make_job_type):
    job = Job.objects.create(job_type=make_job_type(), params={"who": "<script>"})
    change = admin_client.get(reverse("admin:kojo_job_change", args=[job.pk]))
    assert change.status_code == 200
    assert "&lt;script&gt;" in change.content.decode()
    assert admin_client.get(reverse("admin:kojo_job_add")).status_code == 403
    assert (
        admin_client.post(reverse("admin:kojo_job_delete", args=[job.pk]), {"post": "yes"}).status_code == 403
    )
    assert admin_client.get(reverse("admin:kojo_job_changelist")).status_code == 200


# Job types: cron in words, next runs, enable and disable in one click, schedule now.


def test_change_page_shows_the_cron_in_words_and_the_next_five_runs(admin_client, make_job_type):
    kind = make_job_type(cron_expression="30 2 * * 1-5")
    page = admin_client.get(reverse("admin:kojo_jobtype_change", args=[kind.pk])).content.decode()
    assert "at 02:30 UTC on Monday to Friday" in page
    assert page.count(" 02:30 UTC (in ") == 5


def test_list_shows_the_cron_in_words_with_its_next_run(admin_client, make_job_type):
    make_job_type(cron_expression="*/5 * * * *")
    make_job_type(cron_expression="")
    page = admin_client.get(reverse("admin:kojo_jobtype_changelist")).content.decode()
    assert "<code>*/5 * * * *</code>" in page
    assert "every 5 minutes; next " in page


def test_switch_disables_and_enables_a_type_in_one_post_with_csrf(make_job_type):
    kind = make_job_type()
    User.objects.create_superuser("ops", password="pw")
    browser = Client(enforce_csrf_checks=True)
    browser.login(username="ops", password="pw")
    changelist = reverse("admin:kojo_jobtype_changelist")
    page = browser.get(changelist)
    switch = reverse("admin:kojo_jobtype_set_enabled", args=[kind.pk])
    assert f'formaction="{switch}"' in page.content.decode()
    token = page.cookies["csrftoken"].value

    assert browser.post(switch, {"is_enabled": "0"}).status_code == 403  # no CSRF token
    assert browser.get(switch).status_code == 405
    response = browser.post(switch, {"is_enabled": "0", "csrfmiddlewaretoken": token}, follow=True)
    assert response.redirect_chain[-1][0] == changelist
    kind.refresh_from_db()
    assert not kind.is_enabled
    assert "Disabled 1 job type: type_" in response.content.decode()
    assert LogEntry.objects.get(object_id=str(kind.pk)).get_change_message() == "Changed is enabled."

    browser.post(switch, {"is_enabled": "1", "csrfmiddlewaretoken": token})
    kind.refresh_from_db()
    assert kind.is_enabled


def test_switch_is_refused_and_hidden_without_the_change_permission(client, make_job_type):
    kind = make_job_type()
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_jobtype"))
    client.login(username="viewer", password="pw")
    page = client.get(reverse("admin:kojo_jobtype_changelist")).content.decode()
    assert "kojo-switch" not in page
    switch = reverse("admin:kojo_jobtype_set_enabled", args=[kind.pk])
    assert client.post(switch, {"is_enabled": "0"}).status_code == 403
    kind.refresh_from_db()
    assert kind.is_enabled


def run_action(client, model, action, objects, **extra):
    return client.post(
        reverse(f"admin:kojo_{model}_changelist"),
        {"action": action, "_selected_action": [obj.pk for obj in objects], **extra},
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_enable_and_disable_actions(admin_client, make_job_type):
    on, off = make_job_type(), make_job_type(is_enabled=False)
    response = run_action(admin_client, "jobtype", "disable", [on, off])
    assert messages_of(response) == [f"Disabled 1 job type: {on.type_code}."]
    assert not added_types().filter(is_enabled=True).exists()
    response = run_action(admin_client, "jobtype", "enable", [on, off])
    assert messages_of(response) == [f"Enabled 2 job types: {on.type_code}, {off.type_code}."]
    assert not added_types().filter(is_enabled=False).exists()


def test_schedule_now_action_schedules_through_the_api_and_refuses_disabled_types(
    admin_client, make_job_type
):
    on, off = make_job_type(), make_job_type(is_enabled=False)
    response = run_action(admin_client, "jobtype", "schedule_now", [on, off])
    job = Job.objects.get()
    assert job.job_type == on and job.state == JobState.WAITING
    assert messages_of(response) == [
        f"Scheduled job {job.pk} ({on.type_code}).",
        f"Refused {off.type_code}: job type {off.type_code!r} is disabled: "
        "no new jobs may be scheduled for it.",
    ]


# Jobs: every action goes through kojo.control and the state machine, as the acting user.


@pytest.fixture
def jobs(make_job_type):
    kind = make_job_type()

    def make(state=JobState.WAITING, **fields):
        return Job.objects.create(job_type=kind, state=state, **fields)

    return make


def last_change(job) -> JobStateChange:
    return JobStateChange.objects.filter(job=job).latest("id")


@pytest.mark.parametrize(
    ("action", "before", "after", "reason"),
    [
        ("cancel", JobState.WAITING, JobState.CANCELED, "canceled by admin"),
        ("cancel", JobState.HOLD, JobState.CANCELED, "canceled by admin"),
        ("abort", JobState.WAITING, JobState.CANCELED, "canceled by admin"),
        ("hold", JobState.WAITING, JobState.HOLD, "held by admin"),
        ("release", JobState.HOLD, JobState.WAITING, "released by admin"),
        ("run_now", JobState.HOLD, JobState.WAITING, "run now by admin"),
        ("retry", JobState.COMPLETE_FAILED, JobState.WAITING, "retried by admin"),
        ("retry", JobState.CANCELED, JobState.WAITING, "retried by admin"),
    ],
)
def test_job_actions_move_jobs_through_the_state_machine_as_the_user(
    admin_client, jobs, action, before, after, reason
):
    job = jobs(before, start_after=timezone.now() + timedelta(days=1), attempts=2)
    response = run_action(admin_client, "job", action, [job])
    job.refresh_from_db()
    assert job.state == after
    change = last_change(job)
    assert (change.from_state, change.to_state, change.actor, change.reason) == (
        before,
        after,
        "admin",
        reason,
    )
    assert len(messages_of(response)) == 1 and f"job {job.pk}" in messages_of(response)[0]
    if after == JobState.WAITING:
        assert job.start_after <= timezone.now()
    if action == "retry":
        assert job.attempts == 0


def test_run_now_brings_a_waiting_job_forward_and_records_who_asked(admin_client, jobs):
    job = jobs(start_after=timezone.now() + timedelta(hours=3))
    response = run_action(admin_client, "job", "run_now", [job])
    job.refresh_from_db()
    assert job.state == JobState.WAITING and job.start_after <= timezone.now()
    change = last_change(job)
    assert (change.from_state, change.to_state, change.actor) == ("waiting", "waiting", "admin")
    assert messages_of(response) == [f"Set to run now: job {job.pk}."]


def test_abort_of_a_working_job_is_handed_to_its_server(admin_client, jobs):
    job = jobs(JobState.WORKING)
    response = run_action(admin_client, "job", "abort", [job])
    job.refresh_from_db()
    assert job.state == JobState.WORKING and job.abort_requested_by == "admin"
    assert messages_of(response) == [f"Abort sent to the servers running job {job.pk}."]


@pytest.mark.parametrize(
    ("action", "state", "target"),
    [
        ("cancel", JobState.COMPLETE_SUCCESS, "canceled"),
        ("cancel", JobState.WORKING, "canceled"),
        ("abort", JobState.COMPLETE_FAILED, "canceled"),
        ("retry", JobState.COMPLETE_SUCCESS, "waiting"),
        ("retry", JobState.WAITING, "waiting"),
        ("hold", JobState.WORKING, "hold"),
        ("release", JobState.WAITING, "waiting"),
        ("run_now", JobState.WORKING, "waiting"),
        ("run_now", JobState.CANCELED, "waiting"),
    ],
)
def test_illegal_actions_are_refused_with_the_reason(admin_client, jobs, action, state, target):
    job = jobs(state)
    response = run_action(admin_client, "job", action, [job])
    job.refresh_from_db()
    assert job.state == state
    assert not JobStateChange.objects.filter(job=job).exists()
    assert messages_of(response) == [f"Refused job {job.pk} is {state}; it cannot become {target}."]


def test_each_job_is_reported_as_done_or_refused(admin_client, jobs):
    waiting, finished, held = jobs(), jobs(JobState.COMPLETE_SUCCESS), jobs(JobState.HOLD)
    response = run_action(admin_client, "job", "cancel", [waiting, finished, held])
    assert messages_of(response) == [
        f"Canceled job {waiting.pk}, job {held.pk}.",
        f"Refused job {finished.pk} is complete_success; it cannot become canceled.",
    ]


def test_too_many_jobs_are_refused_whole(admin_client, jobs, monkeypatch):
    monkeypatch.setattr("kojo.admin.jobs.ACTION_LIMIT", 2)
    made = [jobs() for _ in range(3)]
    response = run_action(admin_client, "job", "cancel", made[:1], select_across="1", index="0")
    assert "More than 2 jobs selected: nothing was done" in messages_of(response)[0]
    assert not Job.objects.exclude(state=JobState.WAITING).exists()


def test_job_actions_need_the_change_permission(client, jobs):
    job = jobs()
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.login(username="viewer", password="pw")
    page = client.get(reverse("admin:kojo_job_changelist")).content.decode()
    assert 'value="cancel"' not in page
    run_action(client, "job", "cancel", [job])
    job.refresh_from_db()
    assert job.state == JobState.WAITING


# The job list on many rows: a fixed number of queries, and never a COUNT over the whole table.


@pytest.fixture
def many_jobs(make_job_type):
    kinds = [make_job_type() for _ in range(3)]
    servers = [Server.objects.create(host=f"host-{n}", pid=100 + n) for n in range(2)]
    states = list(JobState)
    Job.objects.bulk_create(
        Job(
            job_type=kinds[n % 3],
            state=states[n % len(states)],
            server=servers[n % 2] if n % 5 else None,
            host=f"host-{n % 2}",
            params={"n": n, "batch": f"b{n % 4}"},
        )
        for n in range(300)
    )
    return kinds, servers


def test_job_list_runs_a_fixed_number_of_queries_with_every_filter(admin_client, many_jobs):
    kinds, servers = many_jobs
    url = reverse("admin:kojo_job_changelist")
    some = Job.objects.order_by("id").first()
    queries = [
        {},
        {"p": "2"},
        {"state__exact": "waiting"},
        {"job_type__id__exact": kinds[0].pk},
        {"server__id__exact": servers[1].pk},
        {"server__isnull": "True"},
        {
            "state__exact": "complete_success",
            "job_type__id__exact": kinds[1].pk,
            "server__id__exact": servers[0].pk,
        },
        {"q": str(some.pk)},
        {"q": "batch=b1"},
        {"q": '{"n": 7}'},
        {"q": "not a search"},
        {"o": "-1"},
    ]
    for params in queries:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(url, params)
        assert response.status_code == 200, params
        # Session and user, the capped count, the page, the job types and servers of the filters.
        assert len(captured) <= 6, (params, [query["sql"] for query in captured])
        counts = [query["sql"] for query in captured if "COUNT(" in query["sql"].upper()]
        assert all(" LIMIT " in sql.upper() for sql in counts), counts
        assert counts or params == {"q": "not a search"}  # a search that can match nothing runs no query


def test_job_list_filters_and_searches_find_the_right_jobs(admin_client, many_jobs):
    kinds, servers = many_jobs
    url = reverse("admin:kojo_job_changelist")

    def shown(**params):
        return {job.pk for job in admin_client.get(url, {**params, "all": ""}).context["cl"].result_list}

    waiting = Job.objects.filter(state="waiting", job_type=kinds[0])
    assert shown(state__exact="waiting", job_type__id__exact=kinds[0].pk) == set(
        waiting.values_list("pk", flat=True)
    )
    on_server = Job.objects.filter(server=servers[0], state="hold")
    assert shown(server__id__exact=servers[0].pk, state__exact="hold") == set(
        on_server.values_list("pk", flat=True)
    )
    seven = Job.objects.get(params__n=7)
    assert shown(q=str(seven.pk)) == {seven.pk}
    assert shown(q="n=7") == {seven.pk}
    assert shown(q='{"n": 7, "batch": "b3"}') == {seven.pk}
    assert shown(q='{"n": 7, "batch": "b0"}') == set()
    assert len(shown(q="batch=b1")) == 75
    assert shown(q="free text") == set()


def test_job_list_counts_only_up_to_the_cap(admin_client, many_jobs, monkeypatch):
    monkeypatch.setattr(listing.CappedPaginator, "cap", 120)
    url = reverse("admin:kojo_job_changelist")
    page = admin_client.get(url).content.decode()
    assert "120+ jobs" in page
    filtered = admin_client.get(url, {"job_type__id__exact": many_jobs[0][0].pk}).content.decode()
    assert "100 jobs" in filtered


def test_list_and_change_page_mark_a_stored_type_whose_worker_is_gone(admin_client, make_job_type):
    JobType.objects.create(type_code="gone_worker", name="x", worker="tests.kojo_jobs.renamed_away")
    fine = make_job_type()
    page = admin_client.get(reverse("admin:kojo_jobtype_changelist")).content.decode()
    assert page.count('class="kojo-broken"') == 1
    assert "tests.kojo_jobs.renamed_away" in page
    broken = JobType.objects.get(type_code="gone_worker")
    change = admin_client.get(reverse("admin:kojo_jobtype_change", args=[broken.pk])).content.decode()
    assert 'class="kojo-broken"' in change
    change = admin_client.get(reverse("admin:kojo_jobtype_change", args=[fine.pk])).content.decode()
    assert 'class="kojo-broken"' not in change
