"""Mixpanel, Amplitude and RudderStack."""

import rudderstack.analytics as rudder_analytics
from amplitude import Amplitude, BaseEvent
from mixpanel import Mixpanel

mp = Mixpanel("token")
amplitude_client = Amplitude("key")


def on_invite(user_id: str, page: str) -> None:
    mp.track(user_id, "Teammate_Invited")
    mp.track(user_id, "{}_Viewed".format(page))
    amplitude_client.track(BaseEvent(event_type="Invite_Sent", user_id=user_id))
    rudder_analytics.track(user_id, "Export_Started")
