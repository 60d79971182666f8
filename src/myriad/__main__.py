from myriad.cli import main

raise SystemExit(main())
