from allotment.cli import main

raise SystemExit(main())
