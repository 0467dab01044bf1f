# What else a simulation reads, beside MIRAGE_DATA: WebbPSF's data
# (mirage_reffiles.sources.webbpsf) and the Vega spectrum in astropy's download
# cache (mirage_reffiles.sources.vega). Their rows, and the groups webbpsf, vega
# and simulation (everything a simulation of the chosen instruments reads):
# mirage_reffiles.sources.catalog. Each target is its record, written last.

WEBBPSF_ROW = CATALOG.rows.loc[webbpsf.WEBBPSF_FILE_ID]
VEGA_ROW = CATALOG.rows.loc[vega.VEGA_FILE_ID]


if config["downloads_on_submit_host"]:

    # Small downloads from hosts only the submitting host may reach.
    localrules:
        extract_webbpsf,
        fetch_vega,


rule extract_webbpsf:
    output:
        record=update(str(layout.record_path(WEBBPSF_ROW.root, WEBBPSF_ROW.file_id))),
    log:
        f"{WEBBPSF_ROW.root}/{layout.STATE_DIR}/logs/{WEBBPSF_ROW.file_id}.log",
    resources:
        downloads=1,
    params:
        request=get_webbpsf_request,
    run:
        fetch_logged(params.request, log[0], webbpsf.fetch_webbpsf)


rule fetch_vega:
    output:
        record=update(str(layout.record_path(VEGA_ROW.root, VEGA_ROW.file_id))),
    log:
        f"{VEGA_ROW.root}/{layout.STATE_DIR}/logs/{VEGA_ROW.file_id}.log",
    resources:
        downloads=1,
    params:
        request=get_vega_request,
    run:
        fetch_logged(params.request, log[0], vega.fetch_vega)
