from django import template

from payments.stripe_client import checkout_enabled

register = template.Library()


@register.simple_tag
def stripe_checkout_enabled() -> bool:
    """``{% stripe_checkout_enabled as can_buy %}``: packages are sold through Stripe Checkout."""
    return checkout_enabled()
