# Download jobs run the standard-library-only fetch code under `python -S`:
# skipping site-packages saves tens of milliseconds per job, which is most of
# the cost when the files are small.
FETCH = (
    f"PYTHONPATH={shlex.quote(PACKAGE_ROOT)} {shlex.quote(sys.executable)} -S "
    f"{shlex.quote(str(Path(workflow.basedir) / 'scripts/fetch_reffile.py'))}"
)


rule fetch_dark:
    output:
        fits=f"{MIRAGE_DATA}/{{dark}}",
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/{{dark}}.log",
    params:
        args=get_fetch_args,
    resources:
        downloads=1,
    shell:
        FETCH + " {params.args} 2> {log:q}"


rule extract_tarball:
    output:
        record=f"{MIRAGE_DATA}/{layout.STATE_DIR}/records/{{tarball}}.json",
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/{{tarball}}.log",
    params:
        args=get_fetch_args,
    resources:
        downloads=1,
    shell:
        FETCH + " {params.args} 2> {log:q}"
