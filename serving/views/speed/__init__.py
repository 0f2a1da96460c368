"""The speed view: each user's fresh interactions, profiles and trending, bootstrapped from the Delta speed tables and then followed on speed-updates, within a horizon and caps."""
