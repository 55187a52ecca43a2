"""sft_dataset over every method: the one list a new method adds its export to."""

from condor_dagster.methods.augcon.assets import AUGCON_EXPORT
from condor_dagster.methods.condor.assets import CONDOR_EXPORT
from condor_dagster.stages.sft_dataset import MethodExport, sft_dataset_stage

# Every method's export; sft_dataset joins them (a method not materialized yet is left out).
METHOD_EXPORTS: list[MethodExport] = [CONDOR_EXPORT, AUGCON_EXPORT]
sft_dataset = sft_dataset_stage(METHOD_EXPORTS)
