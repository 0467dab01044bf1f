# The `crds` target: a CRDS cache at crds_path with which crds resolves with no
# server (see mirage_reffiles.sources.crds). Which reference files a set of
# observing modes needs is known only once the context's mappings are in the
# cache and crds has been asked; that plan is made (once, then read back)
# when a crds target is asked for, before any reference is downloaded, so a
# bad context or mode ends the run with a short message.


include: "crds_common.smk"


rule crds:
    input:
        get_crds_references(),


for crds_instrument in CRDS_INSTRUMENTS:

    rule:
        name:
            f"crds_{crds_instrument}"
        input:
            get_crds_references(crds_instrument),


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
        f"{CRDS_PATH}/{crds_cache.STATE_DIR}/logs/{{crds_instrument}}/{{reference}}.log",
    wildcard_constraints:
        crds_instrument=one_of(CRDS_INSTRUMENTS),
        reference=r"[^/\s]+",
    resources:
        downloads=1,
    params:
        request=get_crds_request,
    run:
        crds_cache.fetch_reference_logged(log[0], **params.request)


# Files and bytes present and missing, per instrument (no server is asked).
rule crds_status:
    log:
        ".snakemake/reffiles/logs/crds_status.log",
    params:
        text=get_crds_status,
    run:
        crds_cache.show(params.text, log[0])
