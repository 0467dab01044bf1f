from snakemake.utils import min_version

min_version("9.0")


configfile: f"{workflow.current_basedir}/config/config.yaml"


include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/grism.smk"
include: "rules/report.smk"
include: "rules/crds.smk"
include: "rules/simulation.smk"


rule all:
    default_target: True
    input:
        get_group_input("all"),


for group_name in [name for name in GROUPS if name != "all"]:

    rule:
        name:
            group_name
        input:
            get_group_input(group_name),


# A misspelt target gets the list of groups. Not when this workflow is a module
# of another, whose own top-level files this rule would claim.
if workflow.modifier.is_main_snakefile():

    rule report_unknown_target:
        input:
            get_unknown_target,
        output:
            "{name}",
        wildcard_constraints:
            name=r"[^/]+",


onstart:
    session.start(workflow)


onsuccess:
    settle()
    session.end(success=True)
    report_environment(log)


onerror:
    settle()
    session.end(success=False)
