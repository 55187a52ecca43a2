"""One folder per SFT synthesis method; each ends in `<method>/sft_candidates`."""
