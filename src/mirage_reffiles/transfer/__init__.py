"""Moving bytes: HTTP with retries and resumption (http), what an interrupted download keeps
(partial), progress, and the one probe of the server before a build."""
