"""MOCA-Net experiment: copy/recall and text classification on the shared loop (``experiment``),
their data (``copy_task``, ``text_data``, ``textcls``), steps, metrics, plots and the trained
text classifier (``classifier``)."""
