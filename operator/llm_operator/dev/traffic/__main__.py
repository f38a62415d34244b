from llm_operator.dev.traffic._cli import main

raise SystemExit(main())
