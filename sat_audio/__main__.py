from sat_audio.cli import main

raise SystemExit(main())
