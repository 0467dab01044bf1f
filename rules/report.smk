rule status:
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/status.log",
    conda:
        "../environment.yml"
    params:
        **get_report_params(csv=config["status_csv"]),
    script:
        "../scripts/report_status.py"


rule verify:
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/verify.log",
    conda:
        "../environment.yml"
    params:
        **get_report_params(
            with_contents=config["verify_contents"], clear_damaged=False
        ),
    script:
        "../scripts/verify_tree.py"


checkpoint clear_damaged:
    output:
        # In the working directory: a list for this run only, deleted after it.
        temp("repair/cleared.txt"),
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/repair.log",
    conda:
        "../environment.yml"
    params:
        **get_report_params(with_contents=config["verify_contents"], clear_damaged=True),
    script:
        "../scripts/verify_tree.py"


rule repair:
    input:
        get_repaired_targets,
