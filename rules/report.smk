# Reports read every source's rows (MIRAGE_DATA, the grism folders, a CRDS
# cache once its references were chosen) and write nothing inside the trees
# (they may be read-only shared installs): their logs and repair's lists go
# to the working directory's .snakemake/. Each rule is one call of
# mirage_reffiles.adapters.reports, in the Snakemake process.


rule status:
    log:
        ".snakemake/reffiles/logs/status.log",
    params:
        rows=get_report_rows,
        selections=get_report_selections,
        notes=get_report_notes,
        csv=config["status_csv"],
    run:
        show_status(**params, log=log[0])


rule verify:
    log:
        ".snakemake/reffiles/logs/verify.log",
    params:
        rows=get_report_rows,
        selections=get_report_selections,
        with_contents=config["verify_contents"],
    run:
        verify_tree(**params, log=log[0])


# Its list is named for the run (see REPAIR_RUN), so every `repair` checks the
# tree again; `repair` removes the list once everything on it is fetched.
checkpoint clear_damaged:
    output:
        cleared=f"{REPAIR_DIR}/cleared.{{run}}.txt",
    log:
        ".snakemake/reffiles/logs/repair.{run}.log",
    params:
        rows=get_report_rows,
        selections=get_report_selections,
        with_contents=config["verify_contents"],
        unfinished=get_unfinished_repairs,
    run:
        clear_for_repair(**params, output=output.cleared, log=log[0])


rule repair:
    input:
        cleared=f"{REPAIR_DIR}/cleared.{REPAIR_RUN}.txt",
        targets=get_repaired_targets,
    log:
        ".snakemake/reffiles/logs/repair.log",
    run:
        finish_repair(input.cleared, log[0])
