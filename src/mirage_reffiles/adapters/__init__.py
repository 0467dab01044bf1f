"""What the workflow calls around its jobs: the run as the person at the terminal sees it
(session, display), Snakemake's own costs (runtime), the environment file, and the reports."""
