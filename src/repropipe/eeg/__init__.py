"""EEG motor imagery (PhysioNet EEG Motor Movement/Imagery, runs 4/8/12): left vs right fist imagery."""
