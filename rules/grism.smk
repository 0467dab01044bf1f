# Mirage's grism folders (mirage_reffiles.sources.grism): each instrument's GitHub
# repository, fetched as an archive at the commit config/grism_files.csv pins,
# its chosen version folder extracted into <inst>/GRISM_<INST>/current/ and
# checked file by file against the table's git blob SHA-1s. Its rows and
# target groups: mirage_reffiles.sources.catalog.


if config["downloads_on_submit_host"]:

    # A few tens of MB from GitHub: fetched on the host that can reach it.
    localrules:
        extract_grism,


# Its target is its record, written last, like a tarball's.
rule extract_grism:
    output:
        record=update(f"{MIRAGE_DATA}/{layout.STATE_DIR}/records/{{grism}}.json"),
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/{{grism}}.log",
    wildcard_constraints:
        grism=one_of(CATALOG.rows.file_id[CATALOG.rows.source == "grism"]),
    resources:
        downloads=1,
    params:
        request=get_grism_request,
    run:
        fetch_logged(params.request, log[0], fetch_grism)
