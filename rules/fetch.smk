from snakemake.settings.types import DeploymentMethod

# Download jobs run the standard-library-only fetch code under `python -S`:
# skipping site-packages saves tens of milliseconds per job, which is most of
# the cost when the files are small. With --use-conda the job's environment
# provides python; otherwise it is the one running Snakemake.
PYTHON = (
    "python"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else shlex.quote(sys.executable)
)
FETCH = (
    f"PYTHONPATH={shlex.quote(PACKAGE_ROOT)} {PYTHON} -S "
    f"{shlex.quote(str(Path(workflow.basedir) / 'scripts/fetch_reffile.py'))}"
)


# With downloads_on_submit_host these jobs only unpack: they take no share of
# the cap on downloads.
UNPACK_DOWNLOADS = 0 if config["downloads_on_submit_host"] else 1


rule fetch_dark:
    input:
        archive=get_downloaded,
    output:
        fits=f"{MIRAGE_DATA}/{{dark}}",
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/{{dark}}.log",
    # A failed try leaves its bytes in the partial download: the next resumes.
    retries: 2
    conda:
        "envs/fetch.yaml"
    resources:
        downloads=UNPACK_DOWNLOADS,
    params:
        args=get_fetch_args,
    shell:
        f"{FETCH} {{params.args}} 2> {{log:q}}"


rule extract_tarball:
    input:
        archive=get_downloaded,
    output:
        record=f"{MIRAGE_DATA}/{layout.STATE_DIR}/records/{{tarball}}.json",
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/{{tarball}}.log",
    # A failed try leaves its bytes in the partial download: the next resumes.
    retries: 2
    conda:
        "envs/fetch.yaml"
    resources:
        downloads=UNPACK_DOWNLOADS,
    params:
        args=get_fetch_args,
    shell:
        f"{FETCH} {{params.args}} 2> {{log:q}}"


if config["downloads_on_submit_host"]:

    # For clusters whose compute nodes cannot reach the server: this host
    # downloads, cluster jobs unpack.
    localrules:
        download_archive,

    rule download_archive:
        output:
            archive=DOWNLOADED if config["keep_archives"] else temp(DOWNLOADED),
        log:
            f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/submit_host/{{server_path}}.log",
        retries: 2
        conda:
            "envs/fetch.yaml"
        resources:
            downloads=1,
        params:
            args=get_fetch_args,
        shell:
            f"{FETCH} {{params.args}} 2> {{log:q}}"
