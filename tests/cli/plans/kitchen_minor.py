"""The sample plan after changes that break nobody: a new event, a new description, a category,
a deprecation and a browser-allowed event."""

from __future__ import annotations

from instrumentor import EventRegistry, event


class Events(EventRegistry):
    """Cookbooks over the default account > workspace > project hierarchy."""

    KITCHEN_OPENED = event(
        "Kitchen_Opened",
        category="lifecycle",
        group_level="account",
        description="A new customer account finished sign-up.",
        deprecated="sign-up is tracked as Kitchen_Registered",
    )
    RECIPE_PUBLISHED = event(
        "Recipe_Published",
        category="core_value",
        group_level="project",
        description="A cook published a recipe to the shared cookbook.",
    )
    PANTRY_SEARCHED = event(
        "Pantry_Searched",
        category="feature_usage",
        group_level="workspace",
        description="Someone searched the pantry: by name | by tag.\nFires once per search.",
        frontend=True,
    )
    MENU_SHARED = event(
        "Menu_Shared",
        category="collaboration",
        group_level="project",
        description="A menu was shared as a link.",
        frontend=True,
    )
    MENU_PRINTED = event(
        "Menu_Printed",
        category="collaboration",
        group_level="project",
        description="A menu was printed.",
        frontend=True,
        deprecated="menus are shared as links now",
        replaced_by="Menu_Shared",
        sunset="2027-01-31",
    )
    SEATS_PURCHASED = event(
        "Seats_Purchased",
        category="billing",
        group_level="account",
        description="The account bought more seats.",
        frontend=True,
    )
    PDF_RECIPE_EXPORTED = event(
        "PDF_Recipe_Exported",
        category="core_value",
        group_level="project",
        description="A recipe was exported as a PDF file.",
        waive={"no_variant": "the PDF export is billed separately, so it is its own event"},
    )
    SHOPPING_LIST_PRINTED = event(
        "Shopping_List_Printed",
        category="feature_usage",
        group_level="project",
        description="A shopping list was printed from a menu.",
    )
