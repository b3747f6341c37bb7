"""The demo's own tests, run by Django's test runner (``python manage.py test demo``): the job types
declared in ``kojo_jobs`` exist in the test database from its migrate on, with no server started."""

from django.test import TestCase, TransactionTestCase

from kojo.models import Job


class ScheduleFromTheView(TestCase):
    def test_a_post_schedules_a_greeting(self):
        response = self.client.post("/", {"name": "Ada"})
        self.assertEqual(response.status_code, 302)
        job = Job.objects.get()
        self.assertEqual((job.job_type.type_code, job.params), ("demo_greet", {"name": "Ada"}))


class ScheduleAfterAFlush(TransactionTestCase):
    """A TransactionTestCase empties the tables after each test; the types come back with the flush."""

    def test_first(self):
        self.client.post("/", {"name": "one"})
        self.assertEqual(Job.objects.count(), 1)

    def test_second(self):
        self.client.post("/", {"name": "two"})
        self.assertEqual(Job.objects.count(), 1)
