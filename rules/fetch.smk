# Every job runs in a thread of the Snakemake process (force-use-threads in
# profiles/default): no interpreter to start per file, which is most of the
# cost when files are small. The bytes are moved by ISA-L (or zlib), hashlib
# and the socket layer, which release the GIL, so big files in threads use
# every core. On a cluster each job is its own process anyway.

# With downloads_on_submit_host these jobs only unpack: they take no share of
# the cap on downloads.
UNPACK_DOWNLOADS = 0 if config["downloads_on_submit_host"] else 1


rule fetch_dark:
    input:
        archive=get_downloaded,
    output:
        # update(): Snakemake must not delete a file another run just finished.
        fits=update(f"{MIRAGE_DATA}/{{dark}}"),
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/{{dark}}.log",
    resources:
        downloads=UNPACK_DOWNLOADS,
    params:
        request=get_fetch_request,
    run:
        fetch_logged(params.request, log[0])


# A tarball is fetched the same way; its target is its record, written last.
use rule fetch_dark as extract_tarball with:
    output:
        record=update(f"{MIRAGE_DATA}/{layout.STATE_DIR}/records/{{tarball}}.json"),
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/{{tarball}}.log",


if config["downloads_on_submit_host"]:

    # For clusters whose compute nodes cannot reach the server: this host
    # downloads (checked, not unpacked), cluster jobs unpack.
    localrules:
        download_archive,

    use rule fetch_dark as download_archive with:
        input:
            [],
        output:
            archive=DOWNLOADED if config["keep_archives"] else temp(DOWNLOADED),
        log:
            f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/submit_host/{{server_path}}.log",
        resources:
            downloads=1,


# A file of a tarball or a grism folder asked for by its path (from the command
# line, or by a workflow using this one as a module): a job only when it is not
# in place, which fetches the archive whose lane holds it.
rule fetch_member:
    output:
        member=f"{MIRAGE_DATA}/{{member}}",
    log:
        ".snakemake/reffiles/logs/members/{member}.log",
    resources:
        downloads=1,
    params:
        fetches=get_member_fetches,
    run:
        fetch_member(output.member, params.fetches, log[0])
