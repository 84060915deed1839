"""Audible music for the generated stand-ins: what a clip contains, and its audio.

Both stand-ins (MagnaTagATune's, `datamodules.datasets.mtat.standin`, and MTG-Jamendo's,
`datamodules.datasets.jamendo.standin`) are made of the same clips, so that a model trained on either
really learns something:

* `datamodules.datasets.synthesis.plan`: what a clip contains and how it was annotated (`plan_clip`, `TAGS`);
* `datamodules.datasets.synthesis.render`: its audio (`render_clip`, `synthesize_clip`).
"""
