"""The trio runtime: target actors, dispatcher, admission, and the Switcher facade."""
