"""The shipped models: data only (model.json, its card, example requests)."""
