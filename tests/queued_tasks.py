"""A task on a queue of its own: importing this module needs a backend that knows the queue, which a
kojo_server without any TASKS setting has (kojo.tasks.serving)."""

from kojo.tasks.compat import task


@task(queue_name="emails")
def send_mail(subject):
    return f"sent {subject}"
