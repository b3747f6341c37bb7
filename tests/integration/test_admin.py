import pytest
from django.urls import reverse

from kojo.models import Job, JobType

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
        ("worker", "os.system", "Select a valid choice"),
    ],
)
def test_admin_refuses_bad_values_with_the_shared_message(admin_client, field, value, message):
    response = admin_client.post(reverse("admin:kojo_jobtype_add"), {**VALID, field: value})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not JobType.objects.exists()


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
