"""The papers' experiments as reusable runs (configs, run folders, figures); thin scripts in
``experiments/`` and the CLI call them."""
