"""Voice anti-spoofing on ASVspoof 2019 LA: data, LFCC/log-mel features, LCNN and ResNet countermeasures, EER."""
