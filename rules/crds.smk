# A CRDS cache at crds_path with which crds resolves with no server (see
# mirage_reffiles.sources.crds). Its references are rows like any other
# source's: the targets crds, crds_nircam, ... are groups over them (the
# Snakefile), their plan is made when a crds target is asked for.


# Compute nodes without internet: the host running Snakemake downloads them.
if config["downloads_on_submit_host"]:

    localrules:
        fetch_crds_reference,


rule fetch_crds_reference:
    output:
        # update(): Snakemake must not delete a file another run just finished.
        reference=update(
            f"{CRDS_PATH}/references/jwst/{{crds_instrument}}/{{reference}}"
        ),
    log:
        f"{CRDS_PATH}/{layout.STATE_DIR}/logs/{{crds_instrument}}/{{reference}}.log",
    wildcard_constraints:
        crds_instrument=one_of([name.lower() for name in crds.INSTRUMENTS]),
        reference=r"[^/\s]+",
    resources:
        downloads=1,
    params:
        request=get_crds_request,
    run:
        fetch_logged(params.request, log[0], crds.fetch_reference)
