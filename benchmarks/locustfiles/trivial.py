"""A plain FastHttpUser asking for one cheap page, as fast as it can."""

from locust import FastHttpUser, constant, task


class TrivialGetter(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self) -> None:
        self.client.get("/")
