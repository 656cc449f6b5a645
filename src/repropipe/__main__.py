from repropipe.cli import main

raise SystemExit(main())
