"""The one retry schedule: grows by a factor, stops at a cap."""

from task.backoff import Backoff
from task.launcher import SEND_RETRY, SEND_TRIES


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    assert [Backoff(first=0.2, cap=5.0).delay(i) for i in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_the_launcher_tries_a_done_task_four_times_over_about_a_second() -> None:
    assert SEND_RETRY.delays(SEND_TRIES) == (0.05, 0.25, 1.0)
