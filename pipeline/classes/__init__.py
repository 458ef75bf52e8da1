"""Custom classes: training examples, fitting and saving classifiers, and the custom_labels table's layout."""
