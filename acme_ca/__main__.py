from acme_ca.cli import main

raise SystemExit(main())
