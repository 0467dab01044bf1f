# Reports read MIRAGE_DATA and write nothing inside it (it may be a read-only
# shared install): their logs go to the working directory's .snakemake/.


rule status:
    log:
        ".snakemake/reffiles/logs/status.log",
    params:
        **get_report_params(csv=config["status_csv"]),
    script:
        "../scripts/report_status.py"


rule verify:
    log:
        ".snakemake/reffiles/logs/verify.log",
    params:
        **get_report_params(
            with_contents=config["verify_contents"], clear_damaged=False
        ),
    script:
        "../scripts/verify_tree.py"


# Its list is named for the run (see REPAIR_RUN), so every `repair` checks the
# tree again; `repair` removes the list once everything on it is fetched.
checkpoint clear_damaged:
    output:
        "repair/cleared.{run}.txt",
    log:
        ".snakemake/reffiles/logs/repair.{run}.log",
    params:
        **get_report_params(
            with_contents=config["verify_contents"],
            clear_damaged=True,
            base_url=BASE_URL,
        ),
        unfinished=get_unfinished_repairs,
    script:
        "../scripts/verify_tree.py"


rule repair:
    input:
        cleared=f"repair/cleared.{REPAIR_RUN}.txt",
        targets=get_repaired_targets,
    log:
        ".snakemake/reffiles/logs/repair.log",
    run:
        finish_repair(input.cleared, log[0])
