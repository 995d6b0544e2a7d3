from appwarden.cli.main import main

main()
