# Reports read MIRAGE_DATA and write nothing inside it (it may be a read-only
# shared install): their logs go to the working directory's .snakemake/.
# Each rule is one call of mirage_reffiles.reports, in the Snakemake process.


rule status:
    log:
        ".snakemake/reffiles/logs/status.log",
    params:
        **get_report_params(csv=config["status_csv"]),
    run:
        show_status(**params, log=log[0])


rule verify:
    log:
        ".snakemake/reffiles/logs/verify.log",
    params:
        **get_report_params(with_contents=config["verify_contents"]),
    run:
        verify_tree(**params, log=log[0])


# Its list is named for the run (see REPAIR_RUN), so every `repair` checks the
# tree again; `repair` removes the list once everything on it is fetched.
checkpoint clear_damaged:
    output:
        cleared="repair/cleared.{run}.txt",
    log:
        ".snakemake/reffiles/logs/repair.{run}.log",
    params:
        **get_report_params(with_contents=config["verify_contents"], base_url=BASE_URL),
        unfinished=get_unfinished_repairs,
    run:
        clear_for_repair(**params, output=output.cleared, log=log[0])


rule repair:
    input:
        cleared=f"repair/cleared.{REPAIR_RUN}.txt",
        targets=get_repaired_targets,
    log:
        ".snakemake/reffiles/logs/repair.log",
    run:
        finish_repair(input.cleared, log[0])
