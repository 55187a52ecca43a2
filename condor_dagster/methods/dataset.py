"""sft_dataset over every method: the one list a new method adds its export to."""

from condor_dagster.methods.augcon.assets import AUGCON_ASSETS, AUGCON_EXPORT
from condor_dagster.methods.condor.assets import CONDOR_ASSETS, CONDOR_EXPORT
from condor_dagster.methods.corpus.assets import CORPUS_ASSETS
from condor_dagster.stages.sft_dataset import MethodExport, sft_dataset_stage

# Every method's export; sft_dataset joins them (a method not materialized yet is left out).
METHOD_EXPORTS: list[MethodExport] = [CONDOR_EXPORT, AUGCON_EXPORT]
sft_dataset = sft_dataset_stage(METHOD_EXPORTS)
# Every asset sft_dataset reads from, with it: what `dg.materialize` needs to resolve it.
DATASET_ASSETS = [*CONDOR_ASSETS, *CORPUS_ASSETS, *AUGCON_ASSETS, sft_dataset]
