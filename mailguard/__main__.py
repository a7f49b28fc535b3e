from mailguard.cli.app import main

main()
