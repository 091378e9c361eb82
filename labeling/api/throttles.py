"""Request rates on the API, per signed-in user (a token is its user's) and per address for anonymous calls,
read from the settings at each request. Over the rate: 429 with Retry-After. The per-user rate sits far above
any person's pace (a fast rater makes a few calls a minute; one simulated rater of the rater-loop bench, which
answers as fast as the server lets it, makes about 9,200 alone, 2,500 among eight), so it stops only runaway
scripts."""

from django.conf import settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class UserThrottle(UserRateThrottle):
    def get_rate(self) -> str:
        return settings.API_RATE_USER


class AnonThrottle(AnonRateThrottle):
    def get_rate(self) -> str:
        return settings.API_RATE_ANON
