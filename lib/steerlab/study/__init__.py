"""This study's experiments: the write-up's examples, genre vocabularies, the comparison of
constructions, model-generated data. May import the core (``steerlab.*``), never ``steerlab.lab``."""
