from mllmtune.cli import main

main()
