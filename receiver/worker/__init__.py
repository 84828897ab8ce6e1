"""Background work: submitting edits, fetching results, polling for lost webhooks, publishing events."""
