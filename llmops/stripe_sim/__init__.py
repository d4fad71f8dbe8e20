"""A local stand-in for Stripe Billing Meters, for tests and the demo."""

from llmops.stripe_sim.runtime import StripeSim, serve
from llmops.stripe_sim.server import StripeSimState, build_app, decode_form

__all__ = ["StripeSim", "StripeSimState", "build_app", "decode_form", "serve"]
