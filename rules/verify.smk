rule verify:
    log:
        f"{MIRAGE_DATA}/{layout.STATE_DIR}/logs/verify.log",
    conda:
        "../environment.yml"
    params:
        **get_verify_params(clear=False),
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
        **get_verify_params(clear=True),
    script:
        "../scripts/verify_tree.py"


rule repair:
    input:
        get_repaired_targets,
