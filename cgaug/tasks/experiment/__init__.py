"""`cgaug experiment mini`: a miniature world in which the method's effect can be measured on a CPU.

Every image is painted by the procedural painter (`cgaug.models.painter`), which stands in for the
diffusion generator: originals (clear day), their CG-Aug variants (other weathers, times and places,
objects of the training OOD classes pasted) and a test world that no training step sees. Three
methods are trained with the project's own training code (`cgaug.tasks.training`) and scored with
its metrics (`cgaug.tasks.evaluation.metrics`):

- A, closed world: a small DeepLabv3+ trained with cross-entropy on the originals; anomaly score =
  the energy of its logits;
- B, OOD only: A fine-tuned by two-stage training with the anomaly mix on originals, no generated
  image (each original is its own "augmented" partner), the RPL / PEBAL family;
- C, CG-Aug: the same two-stage noise-aware training with the painted CG-Aug variants.

B and C differ only in the augmented images. The protocol (`protocol.MiniProtocol`), the worlds
(`world`), the training configurations (`protocol.method_config`), predictions and metrics
(`predict`) and the report (`report`) live here; the Prefect flow `cgaug-experiment`
(`cgaug.flows.experiment`) runs them in order.
"""
