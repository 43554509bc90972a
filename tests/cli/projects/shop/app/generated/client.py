"""Excluded by [tool.instrumentor] exclude: never reported."""

import posthog

posthog.capture("u", "Generated_Event")
