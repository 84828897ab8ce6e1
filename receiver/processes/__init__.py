"""`serve --processes N`: a supervisor, web processes that only answer HTTP, and worker processes."""
