"""Retry policies for activities and sub-orchestrations (durable: waits are timers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from durafka.errors import FailureDetails, PoisonTaskError


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed activity or sub-orchestration is retried.

    Each wait is a durable timer recorded in history, so a retry survives a
    restart and every attempt is visible in the instance's history.

    Attributes:
        max_attempts: attempts in all, the first included (1 = no retry).
        first_interval: wait before the second attempt.
        backoff_coefficient: each further wait is the previous one times this.
        max_interval: upper bound of one wait.
        total_timeout: give up once this much time has passed since the first attempt.
        non_retryable_errors: exception types (or their names) never retried.

    Example:
        >>> policy = RetryPolicy(max_attempts=5, first_interval=timedelta(seconds=1))
        >>> await ctx.call_activity(charge_card, order, retry=policy)
    """

    max_attempts: int = 3
    first_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    max_interval: timedelta = timedelta(minutes=5)
    total_timeout: timedelta | None = None
    non_retryable_errors: tuple[type[BaseException] | str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.first_interval <= timedelta(0):
            raise ValueError("RetryPolicy.first_interval must be positive")
        if self.backoff_coefficient < 1.0:
            raise ValueError("RetryPolicy.backoff_coefficient must be at least 1.0")

    def delay_before(self, attempt: int) -> timedelta:
        """The wait before attempt number ``attempt`` (2, 3, ...)."""
        seconds = self.first_interval.total_seconds() * self.backoff_coefficient ** (attempt - 2)
        return min(timedelta(seconds=seconds), self.max_interval)

    def is_retryable(self, failure: FailureDetails) -> bool:
        """Whether a failure with these details may be retried.

        A :class:`~durafka.errors.PoisonTaskError` (a task that took its worker down
        ``max_activity_deliveries`` times) never is.
        """
        if failure.is_caused_by(PoisonTaskError):
            return False
        for err in self.non_retryable_errors:
            if isinstance(err, str):
                if failure.error_type == err or failure.error_type.rsplit(".", 1)[-1] == err:
                    return False
            elif failure.is_caused_by(err):
                return False
        return True
