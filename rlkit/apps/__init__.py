"""The applications: the command line and everything a person runs (doctor, tune, reproduce, plot, export,
quickstart, the preference-labelling server and page). They may use every layer below; nothing below imports them."""
