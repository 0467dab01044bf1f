"""A synthetic copy of STScI's server (mirror) and an HTTP server for a folder (server):
for the demo, the tests, the benchmark, and sites trying the cluster profile."""
